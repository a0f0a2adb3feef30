"""Greedy draft-and-verify decoding around a Hugging Face causal LM, with
drafts from arctic_inference_core's suffix cache. No vLLM involved: this is
what another engine does to use the core.

Each step drafts up to `k` tokens from the cache, runs the model once over
the draft, keeps the longest prefix the model agrees with plus the model's
own next token, and tells the cache what was generated. The output is exactly
what plain greedy decoding gives; only the number of model calls changes.

Run: python docs/examples/hf_draft_verify.py  (builds a tiny random model)
"""

from __future__ import annotations

import torch

from arctic_inference_core.suffix import SuffixDecodingCache


@torch.no_grad()
def generate(
    model,
    prompt: list[int],
    max_new_tokens: int,
    cache: SuffixDecodingCache,
    req_id: str = "req",
    k: int = 16,
) -> tuple[list[int], int]:
    """Return (generated token ids, number of model forward passes)."""
    cache.start_request(req_id, prompt)
    tokens, out, calls = list(prompt), [], 0
    try:
        while len(out) < max_new_tokens:
            draft = cache.speculate(
                req_id, tokens[-cache.max_tree_depth :], max_spec_tokens=k
            ).token_ids
            draft = draft[: max_new_tokens - len(out) - 1]
            # One forward pass scores the last token and every draft token.
            logits = model(torch.tensor([tokens + draft])).logits[0, len(tokens) - 1 :]
            calls += 1
            predicted = logits.argmax(-1).tolist()  # model's choice after each position
            accepted = 0
            while accepted < len(draft) and draft[accepted] == predicted[accepted]:
                accepted += 1
            new = draft[:accepted] + [predicted[accepted]]
            tokens += new
            out += new
            cache.add_active_response(req_id, new)
    finally:
        cache.stop_request(req_id)
    return out[:max_new_tokens], calls


@torch.no_grad()
def generate_plain(model, prompt: list[int], max_new_tokens: int) -> list[int]:
    tokens = list(prompt)
    for _ in range(max_new_tokens):
        tokens.append(int(model(torch.tensor([tokens])).logits[0, -1].argmax()))
    return tokens[len(prompt) :]


def tiny_model(vocab: int = 64, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    return LlamaForCausalLM(cfg).eval()


if __name__ == "__main__":
    model = tiny_model()
    prompt = [5, 6, 7, 8, 9, 10, 11] * 4
    cache = SuffixDecodingCache(max_tree_depth=32)
    out, calls = generate(model, prompt, 48, cache)
    assert out == generate_plain(model, prompt, 48)
    print(f"48 tokens in {calls} forward passes (plain greedy: 48); identical output")
