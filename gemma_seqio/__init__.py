"""The light core every gemma-seqio package may import: standard library only, registers nothing.

  * `gemma_seqio.special_tokens` — the Gemma token-id contract (pad 0, eos 1, bos 2, ...).
  * `gemma_seqio.template` — the Gemma dialog template (`gm.data.Seq2SeqTask` layout).
  * `gemma_seqio.flags` — command-line flags generated from a run's frozen dataclass.
  * `gemma_seqio.cli_log` — our CLIs' terminal output; third-party output to a log file.

`gemma_tasks` (registers the Tasks, loads TensorFlow), `feature_converters`, `model` and
`cache_scripts` all read the ids and the template from here, so reading one constant never
registers a task or starts TensorFlow or JAX.
"""
