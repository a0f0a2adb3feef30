"""Shared code of the benchmark scripts in ``bench/``.

The scripts run as ``python bench/<script>.py``, so ``bench/`` is on
``sys.path`` and ``import benchlib`` works without path edits. Scripts keep
only their command line and what is theirs alone; what two scripts share
lives here:

- :mod:`benchlib.paths`: the repository, ``bench/results/`` and the optional
  ``../shared`` directory (bench-lm, bench-data);
- :mod:`benchlib.worker`: the worker-process protocol (a child prints
  ``RESULT {json}`` lines, the parent runs it and collects them);
- :mod:`benchlib.engine`: the vLLM engine the serving benchmarks share
  (methods, speculative configs, model and prompt choice, spec counters);
- :mod:`benchlib.shapes`: config-only model shapes (``llama-8b``) and FLOPs;
- :mod:`benchlib.tables`: Markdown tables, number formats, medians, ratios;
- :mod:`benchlib.stamps`: the version stamp written with every results file;
- :mod:`benchlib.synthetic`: the synthetic agentic trace generator;
- :mod:`benchlib.timing`: timed regions without the garbage collector,
  percentiles;
- :mod:`benchlib.suffix`: the model-free suffix decoding simulator behind
  ``bench/suffix_sim.py``.

JSON-lines traces are read with the core's one reader,
:func:`arctic_inference_core.traces.read_prompt_records`.
"""
