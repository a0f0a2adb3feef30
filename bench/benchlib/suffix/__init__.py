"""The model-free suffix decoding simulator behind ``bench/suffix_sim.py``.

- :mod:`~benchlib.suffix.data`: trace files read and tokenized (token cache);
- :mod:`~benchlib.suffix.drafters`: the drafters compared (this core, the
  reference arctic-inference, vLLM's n-gram) behind one interface;
- :mod:`~benchlib.suffix.replay`: greedy decoding replayed per request,
  summaries and head-to-heads;
- :mod:`~benchlib.suffix.microbench`: ``speculate_batch`` against the
  per-request loop at several batch sizes;
- :mod:`~benchlib.suffix.report`: the Markdown report and the target checks.
"""
