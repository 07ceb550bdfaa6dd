"""The seqio/T5X-facing side of the Gemma model: what runs it on tasks and checkpoints.

  * `t5x_model` — `GemmaDecoderOnlyModel`, the T5X model protocol (`loss_fn`,
    `predict_batch_with_aux`, `score_batch`, `get_initial_variables`); `t5x_metrics`.
  * `train` / `evaluate` — the CLIs `python -m model.runner.train` / `python -m
    model.runner.evaluate` (seqio Tasks in, T5X-layout checkpoints out; the seqio `Evaluator`);
    their settings are frozen dataclasses (`TrainArgs`, `EvalArgs`) whose flags
    `gemma_seqio.flags` generates; `train_step` (the one jitted training step).
  * `inputs` (seqio datasets as batches), `optim`, `mesh` (device mesh, `jax.distributed`),
    `t5x_checkpoints`, `checkpoint_checksums`, `vocab_record`, `train_checks`, `interrupts`,
    `import_hf` (a HF checkpoint as a T5X `checkpoint_0`), `average_checkpoints`, `t5x_run_config`,
    `t5x_partitioner` and `seqio_fixes` (used by the gin files), `configs/` (gin files).

It builds on the pure library in `model` (config, layers, transformer, decoding, beams, chat),
never the other way round.
"""
