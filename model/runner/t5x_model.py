"""`GemmaDecoderOnlyModel`: the T5X model protocol around the Gemma decoder.

What `t5x.train` / `t5x.eval` and the SeqIO Evaluator call, on T5X's decoder-only features:

  decoder_input_tokens     [B, L] int   the sequence shifted right, starting with BOS 2
  decoder_target_tokens    [B, L] int   the sequence
  decoder_loss_weights     [B, L]       1 on the tokens that are trained / scored
  decoder_causal_attention [B, L]       1 on the prompt (BOS + inputs), needed to predict
  decoder_segment_ids, decoder_positions [B, L] (optional)  packed rows

Running example (inputs [9, 4], targets [3, 107]):

  decoder_input_tokens     = [2, 9, 4, 3, 0, 0]
  decoder_target_tokens    = [9, 4, 3, 107, 0, 0]
  decoder_loss_weights     = [0, 0, 1, 1, 0, 0]
  decoder_causal_attention = [1, 1, 1, 0, 0, 0]
  predict_batch  ->          [a, b, 107, 0, 0, 0]    (the continuation only, never the prompt)
  score_batch    ->          log p(3 | 2 9 4) + log p(107 | 2 9 4 3)

When T5X itself is importable the class subclasses `t5x.models.BaseTransformerModel`; otherwise
it stands alone with the same method signatures. Nothing here imports TensorFlow: the feature
converter class and the vocabulary are resolved only when asked for.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Mapping, MutableMapping, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp

from model import beams, decoding
from model.runner import t5x_metrics
from model.config import STOP_IDS, GemmaConfig
from model.transformer import Transformer

try:  # T5X cannot be installed from PyPI; when a user has it, be a real T5X model.
  from t5x import models as _t5x_models  # pytype: disable=import-error
  _Base = _t5x_models.BaseTransformerModel
except ImportError:
  _t5x_models = None
  _Base = object

NUM_REAL_TARGET_TOKENS = "NUM_REAL_TARGET_TOKENS"
NUM_TOTAL_TARGET_TOKENS = "NUM_TOTAL_TARGET_TOKENS"


def _soft_target_entropy(confidence: float, low: float, vocab: int) -> float:
  """Entropy of the label-smoothed target distribution (T5X's `normalizing_constant`).

  >>> round(_soft_target_entropy(0.9, 0.1 / 3, 4), 4)    # 0.9 on the target, 1/30 elsewhere
  0.4349
  """
  entropy = -(vocab - 1) * low * math.log(low) if low > 0 else 0.0
  return entropy - (confidence * math.log(confidence) if confidence > 0 else 0.0)


class _FeatureConverterClass:
  """Class attribute resolved on access, so `import model` does not import seqio/TensorFlow.

  Default: `feature_converters.GemmaPrefixLMFeatureConverter`; an instance can override it
  (`feature_converter_cls=` in the constructor, as in T5X).
  """

  def __get__(self, obj, owner):
    if obj is not None and obj.__dict__.get("_feature_converter_cls") is not None:
      return obj.__dict__["_feature_converter_cls"]
    import feature_converters  # pylint: disable=g-import-not-at-top
    return feature_converters.GemmaPrefixLMFeatureConverter

  def __set__(self, obj, value):
    obj.__dict__["_feature_converter_cls"] = value


class GemmaDecoderOnlyModel(_Base):
  """Gemma as a T5X decoder-only model.

  Args:
    config: the GemmaConfig (or pass `module=Transformer(config)`, T5X style).
    vocabulary: a seqio vocabulary (`gemma_tasks.vocab.GemmaVocabulary()`); only needed by
      callers that detokenize (the Evaluator); the model itself works on ids.
    optimizer_def: kept for T5X (`model.optimizer_def`); the trainer owns optimisation.
    strategy: sampling strategy for `predict_batch` (default Greedy()), or `BeamSearch(...)`.
    max_new_tokens: cap on generated tokens per example (default: the batch length).
    stop_ids / forbidden_ids: see `model.decoding.generate`.
    inputs_bidirectional_attention: PrefixLM attention over the prompt (T5X's flag; Gemma
      checkpoints are trained fully causal, so the default is False).
    label_smoothing, z_loss: as in T5X (`z_loss * log(Z)^2` per weighted token).
    loss_normalizing_factor: None (T5X's default: the weighted sum), a number, or
      'NUM_REAL_TARGET_TOKENS' (our default: the mean over weighted tokens) or
      'NUM_TOTAL_TARGET_TOKENS' (divide by B * L).
  """

  FEATURE_CONVERTER_CLS = _FeatureConverterClass()

  def __init__(
      self,
      config: Optional[GemmaConfig] = None,
      *,
      module: Optional[Transformer] = None,
      vocabulary: Any = None,
      optimizer_def: Any = None,
      strategy: Union[decoding.SamplingStrategy, beams.BeamSearch] = decoding.Greedy(),
      max_new_tokens: Optional[int] = None,
      stop_ids: Sequence[int] = STOP_IDS,
      forbidden_ids: Sequence[int] = (),
      inputs_bidirectional_attention: bool = False,
      feature_converter_cls: Any = None,
      label_smoothing: float = 0.0,
      z_loss: float = 0.0,
      loss_normalizing_factor: Union[None, float, str] = NUM_REAL_TARGET_TOKENS,
  ):
    if module is None:
      if config is None:
        raise ValueError("GemmaDecoderOnlyModel needs a config or a module")
      module = Transformer(config)
    self.config = module.config
    self._strategy = strategy
    self._max_new_tokens = max_new_tokens
    self._stop_ids = tuple(stop_ids)
    self._forbidden_ids = tuple(forbidden_ids)
    self._inputs_bidirectional_attention = inputs_bidirectional_attention
    if feature_converter_cls is not None:
      self.FEATURE_CONVERTER_CLS = feature_converter_cls
    if isinstance(loss_normalizing_factor, str) and loss_normalizing_factor not in (
        NUM_REAL_TARGET_TOKENS, NUM_TOTAL_TARGET_TOKENS):
      raise ValueError(f"unsupported loss_normalizing_factor {loss_normalizing_factor!r}")
    if _t5x_models is not None:
      super().__init__(module=module, input_vocabulary=vocabulary, output_vocabulary=vocabulary,
                       optimizer_def=optimizer_def, decode_fn=None,
                       label_smoothing=label_smoothing, z_loss=z_loss,
                       loss_normalizing_factor=loss_normalizing_factor)
    self.module = module
    self.optimizer_def = optimizer_def
    self._vocabulary = vocabulary
    self._label_smoothing = label_smoothing
    self._z_loss = z_loss
    self._loss_normalizing_factor = loss_normalizing_factor

  @property
  def input_vocabulary(self):
    return self._vocabulary

  @property
  def output_vocabulary(self):
    return self._vocabulary

  # -- initialisation ---------------------------------------------------------------------------

  def get_initial_variables(
      self,
      rng: jax.Array,
      input_shapes: Mapping[str, Sequence[int]],
      input_types: Optional[Mapping[str, Any]] = None,
  ) -> dict:
    """Fresh `{'params', 'params_axes'}` for batches of `input_shapes['decoder_input_tokens']`.

    >>> from model.config import tiny_gemma1
    >>> m = GemmaDecoderOnlyModel(tiny_gemma1(vocab_size=300))
    >>> v = m.get_initial_variables(jax.random.PRNGKey(0), {'decoder_input_tokens': (2, 8)})
    >>> v['params'].keys()
    dict_keys(['embedder', 'final_norm', 'layer_0', 'layer_1'])
    >>> v['params']['embedder']['input_embedding'].shape      # [vocab, embed]
    (300, 64)
    >>> v['params_axes']['embedder']['input_embedding_axes'].names
    ('vocab', 'embed')
    """
    del input_types  # tokens are always int32 here
    shape = tuple(input_shapes["decoder_input_tokens"])
    init = jax.jit(functools.partial(self.module.init, enable_dropout=False))
    variables = init(rng, jnp.ones(shape, jnp.int32))
    # `params_axes`: the logical axis names T5X's partitioner shards by (`model.partitioning`).
    return {"params": variables["params"], "params_axes": variables["params_axes"]}

  # -- training / evaluation loss ---------------------------------------------------------------

  def _compute_logits(self, params, batch: Mapping[str, jax.Array],
                      dropout_rng: Optional[jax.Array] = None, mutable=False,
                      flax_mutables=None, logit_indices: Optional[jax.Array] = None) -> jax.Array:
    """float32 logits [B, L, V] of a teacher-forced pass (dropout only with a dropout_rng);
    [N, V] at the flat positions `logit_indices` [N] if given."""
    rngs = {"dropout": dropout_rng} if dropout_rng is not None else None
    causal_attention = None
    if self._inputs_bidirectional_attention:
      if "decoder_causal_attention" not in batch:
        raise ValueError("inputs_bidirectional_attention needs 'decoder_causal_attention'")
      causal_attention = batch["decoder_causal_attention"]
    return self.module.apply(
        {"params": params, **(flax_mutables or {})},
        batch["decoder_input_tokens"],
        batch.get("decoder_target_tokens"),
        decoder_segment_ids=batch.get("decoder_segment_ids"),
        decoder_positions=batch.get("decoder_positions"),
        decoder_causal_attention=causal_attention,
        enable_dropout=rngs is not None, rngs=rngs, mutable=mutable,
        logit_indices=logit_indices)

  def _weights(self, batch):
    if "decoder_loss_weights" in batch:
      return batch["decoder_loss_weights"].astype(jnp.float32)
    return (batch["decoder_target_tokens"] > 0).astype(jnp.float32)

  def weighted_loss(
      self,
      params,
      batch: Mapping[str, jax.Array],
      dropout_rng: Optional[jax.Array],
      flax_mutables=None,
      *,
      max_loss_positions: Optional[int] = None,
  ) -> Tuple[jax.Array, Mapping[str, jax.Array]]:
    """Weighted next-token cross-entropy -> (loss scalar, metrics dict of scalars).

    What our trainer differentiates; `loss_fn` (T5X's protocol) is the same loss with the
    metrics as clu objects.

    metrics: 'loss', 'cross_ent_loss' (normalised like `loss`, without z-loss), 'z_loss',
    'accuracy' (weighted argmax accuracy), 'weight_sum' (sum of decoder_loss_weights),
    'num_tokens' (non-padding targets), 'num_examples' (segments; rows when unpacked).

    `max_loss_positions` (static) = K: logits are computed only at the K positions of largest
    loss weight instead of all B*L (PrefixLM rows carry weight on ~40% of them, and the
    vocabulary projection is a third of a small model's step). Same loss and gradients as
    long as at most K positions have weight; the trainer picks K per batch from the weights
    (`loss_positions_bucket`), so none is dropped.

    The running example of the module docstring (inputs [9, 4], targets [3, 107]) on a freshly
    initialised one-layer model:

    >>> import numpy as np
    >>> from model.config import tiny_gemma1
    >>> m = GemmaDecoderOnlyModel(tiny_gemma1(vocab_size=300).replace(num_layers=1))
    >>> params = m.get_initial_variables(jax.random.PRNGKey(0),
    ...                                  {'decoder_input_tokens': (1, 6)})['params']
    >>> batch = {'decoder_input_tokens':     np.array([[2, 9, 4, 3, 0, 0]]),
    ...          'decoder_target_tokens':    np.array([[9, 4, 3, 107, 0, 0]]),
    ...          'decoder_loss_weights':     np.array([[0, 0, 1, 1, 0, 0]]),
    ...          'decoder_causal_attention': np.array([[1, 1, 1, 0, 0, 0]])}
    >>> loss, metrics = jax.jit(m.weighted_loss)(params, batch, None)    # pure, jit-able
    >>> round(float(loss), 1), {k: float(metrics[k]) for k in
    ...                         ('weight_sum', 'num_tokens', 'num_examples', 'z_loss')}
    (7.5, {'weight_sum': 2.0, 'num_tokens': 4.0, 'num_examples': 1.0, 'z_loss': 0.0})
    """
    targets = batch["decoder_target_tokens"]
    weights = self._weights(batch)
    full_targets = targets
    logit_indices = None
    if max_loss_positions is not None and max_loss_positions < targets.size:
      _, logit_indices = jax.lax.top_k(weights.reshape(-1), max_loss_positions)
      targets = jnp.take(targets.reshape(-1), logit_indices)
      weights = jnp.take(weights.reshape(-1), logit_indices)
    logits = self._compute_logits(params, batch, dropout_rng, flax_mutables=flax_mutables,
                                  logit_indices=logit_indices)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    log_probs = logits - log_z[..., None]
    # The target's entry picked with a one-hot mask, not a gather: the same value, and the
    # backward pass is a fused select instead of a scatter into a [N, V] zero tensor.
    vocab_ids = jnp.arange(logits.shape[-1])
    is_target = targets[..., None] == vocab_ids
    target_log_prob = jnp.sum(jnp.where(is_target, log_probs, 0.0), axis=-1)
    if self._label_smoothing:
      vocab = logits.shape[-1]
      low = self._label_smoothing / (vocab - 1)
      # -(soft targets . log_probs), soft targets = 1 - smoothing on the target, `low` elsewhere.
      confidence = 1.0 - self._label_smoothing
      token_ce = -((confidence - low) * target_log_prob + low * jnp.sum(log_probs, -1))
      # T5X subtracts the soft targets' entropy, so a loss of 0 means the model predicts the
      # soft targets exactly (a KL divergence) and losses compare with T5X runs; the gradient
      # is the same either way.
      token_ce = token_ce - _soft_target_entropy(confidence, low, vocab)
    else:
      token_ce = -target_log_prob
    token_z = self._z_loss * jnp.square(log_z)
    if self._loss_normalizing_factor is None:
      norm = 1.0
    elif self._loss_normalizing_factor == NUM_REAL_TARGET_TOKENS:
      norm = jnp.maximum(jnp.sum(weights), 1e-8)
    elif self._loss_normalizing_factor == NUM_TOTAL_TARGET_TOKENS:
      norm = float(full_targets.size)
    else:
      norm = float(self._loss_normalizing_factor)
    cross_ent = jnp.sum(token_ce * weights) / norm
    z_loss = jnp.sum(token_z * weights) / norm
    loss = cross_ent + z_loss
    # argmax == target, written as "the first index holding the largest logit": two plain
    # reductions, where XLA:CPU runs argmax's (value, index) reduction element by element.
    top = jnp.max(logits, axis=-1, keepdims=True)
    first_top = jnp.min(jnp.where(logits == top, vocab_ids, logits.shape[-1]), axis=-1)
    correct = (first_top == targets).astype(jnp.float32)
    weight_sum = jnp.sum(weights)
    if "decoder_segment_ids" in batch:
      seg = batch["decoder_segment_ids"]
      # A segment starts where the id changes to a non-zero value.
      starts = (seg != 0) & (seg != jnp.pad(seg, ((0, 0), (1, 0)))[:, :-1])
      num_examples = jnp.sum(starts)
    else:
      num_examples = jnp.sum(jnp.any(full_targets > 0, axis=-1))
    metrics = {
        "loss": loss,
        "cross_ent_loss": cross_ent,
        "z_loss": z_loss,
        "accuracy": jnp.sum(correct * weights) / jnp.maximum(weight_sum, 1e-8),
        "weight_sum": weight_sum,
        "num_tokens": jnp.sum(full_targets > 0),
        "num_examples": num_examples,
    }
    return loss, metrics

  def loss_fn(
      self,
      params,
      batch: Mapping[str, jax.Array],
      dropout_rng: Optional[jax.Array],
      flax_mutables=None,
  ) -> Tuple[jax.Array, Mapping[str, Any]]:
    """T5X's `loss_fn`: `weighted_loss` with its metrics as the clu `Metric` objects that T5X's
    trainer merges across microbatches and steps (`model.runner.t5x_metrics`).

    >>> import numpy as np
    >>> from model.config import tiny_gemma1
    >>> m = GemmaDecoderOnlyModel(tiny_gemma1(vocab_size=300).replace(num_layers=1))
    >>> params = m.get_initial_variables(jax.random.PRNGKey(0),
    ...                                  {'decoder_input_tokens': (1, 6)})['params']
    >>> batch = {'decoder_input_tokens':     np.array([[2, 9, 4, 3, 0, 0]]),
    ...          'decoder_target_tokens':    np.array([[9, 4, 3, 107, 0, 0]]),
    ...          'decoder_loss_weights':     np.array([[0, 0, 1, 1, 0, 0]])}
    >>> loss, metrics = jax.jit(m.loss_fn)(params, batch, None)
    >>> float(metrics['loss'].compute()) == float(loss)
    True
    >>> {k: float(metrics[k].compute()) for k in ('weight_sum', 'num_tokens', 'num_examples')}
    {'weight_sum': 2.0, 'num_tokens': 4.0, 'num_examples': 1.0}
    """
    loss, scalars = self.weighted_loss(params, batch, dropout_rng, flax_mutables=flax_mutables)
    return loss, t5x_metrics.from_scalars(scalars)

  def eval_fn(self, params, batch, flax_mutables=None):
    """`loss_fn` without dropout."""
    return self.loss_fn(params, batch, dropout_rng=None, flax_mutables=flax_mutables)

  # -- scoring ----------------------------------------------------------------------------------

  def score_batch(
      self,
      params,
      batch: Mapping[str, jax.Array],
      return_intermediates: bool = False,
      flax_mutables=None,
  ) -> jax.Array:
    """Sum over weighted positions of log p(target token): float32 [B].

    With `return_intermediates=True`: (scores, {'decoder': {'token_scores': ([B, L],)}}).
    """
    logits = self._compute_logits(params, batch, None, flax_mutables=flax_mutables)
    targets = batch["decoder_target_tokens"]
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    token_scores = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    token_scores = token_scores * self._weights(batch)
    scores = token_scores.sum(-1)
    if return_intermediates:
      return scores, {"decoder": {"token_scores": (token_scores,)}}
    return scores

  # -- prediction -------------------------------------------------------------------------------

  def predict_batch(self, params, batch, rng: Optional[jax.Array] = None, flax_mutables=None):
    """`predict_batch_with_aux(...)[0]`: int32 [B, L] continuations."""
    del flax_mutables
    return self.predict_batch_with_aux(params, batch, rng=rng)[0]

  def predict_batch_with_aux(
      self,
      params,
      batch: Mapping[str, jax.Array],
      rng: Optional[jax.Array] = None,
      *,
      return_all_decodes: bool = False,
      num_decodes: int = 1,
      decoder_params: Optional[MutableMapping[str, Any]] = None,
      flax_mutables=None,
  ) -> Tuple[jax.Array, Mapping[str, jax.Array]]:
    """Decode the continuation of each prompt -> (tokens int32 [B, L], {'scores': float32 [B]}).

    The prompt of a row is `decoder_input_tokens` where `decoder_causal_attention` is 1 (BOS +
    inputs; targets in the batch are ignored). The returned row holds only generated tokens,
    left-aligned, ending with the stop token when one was produced, then 0s. A prompt of P
    tokens leaves room for L - P new tokens (T5X's `max_decode_length` = L), further capped by
    `max_new_tokens`. 'scores' is the sum of the model's log-probabilities of those tokens.

    `num_decodes` > 1 samples that many continuations per row and returns the best, or all of
    them ([B, num_decodes, L], increasing score, as T5X) with `return_all_decodes`.
    With a `BeamSearch` strategy the row's beams are those decodes (`num_decodes` > 1 sets the
    beam size, as in T5X), ranked by length-normalised score; 'scores' stays the sum of
    log-probabilities of the returned tokens.
    `decoder_params` may set 'decode_rng', 'max_decode_steps' or 'strategy'.
    """
    del flax_mutables
    if "decoder_causal_attention" not in batch:
      raise ValueError(
          "predict_batch needs 'decoder_causal_attention' (a batch with both inputs and targets "
          "from the PrefixLM feature converter) to know where each prompt ends")
    decoder_params = dict(decoder_params or {})
    rng = decoder_params.pop("decode_rng", rng)
    strategy = decoder_params.pop("strategy", self._strategy)
    max_steps = decoder_params.pop("max_decode_steps", self._max_new_tokens)
    if decoder_params:
      raise ValueError(f"unknown decoder_params: {sorted(decoder_params)}")

    causal = batch["decoder_causal_attention"].astype(jnp.int32)
    prompts = batch["decoder_input_tokens"].astype(jnp.int32) * causal
    lengths = jnp.sum(causal, axis=-1)
    batch_size, length = prompts.shape
    max_new = min(int(max_steps or length), length)
    if isinstance(strategy, beams.BeamSearch):
      return self._predict_with_beams(params, prompts, lengths, strategy, num_decodes,
                                      max_new, return_all_decodes)
    if num_decodes > 1:
      prompts = jnp.repeat(prompts, num_decodes, axis=0)
      lengths = jnp.repeat(lengths, num_decodes, axis=0)
    out = decoding.generate(
        self.config, params, prompts, prompt_lengths=lengths, strategy=strategy,
        max_new_tokens=max_new, stop_ids=self._stop_ids, forbidden_ids=self._forbidden_ids,
        rng=rng, cache_length=length)
    tokens = jnp.pad(out.tokens, ((0, 0), (0, length - max_new)))
    scores = out.scores
    if num_decodes > 1:
      tokens = tokens.reshape(batch_size, num_decodes, length)
      scores = scores.reshape(batch_size, num_decodes)
      order = jnp.argsort(scores, axis=-1)
      tokens = jnp.take_along_axis(tokens, order[..., None], axis=1)
      scores = jnp.take_along_axis(scores, order, axis=1)
      if not return_all_decodes:
        tokens, scores = tokens[:, -1], scores[:, -1]
    return tokens, {"scores": scores}

  def _predict_with_beams(self, params, prompts, lengths, strategy, num_decodes, max_new,
                          return_all_decodes):
    if num_decodes > 1:
      strategy = dataclasses.replace(strategy, num_beams=num_decodes)
    length = prompts.shape[1]
    out = beams.beam_search(
        self.config, params, prompts, prompt_lengths=lengths, beam=strategy,
        max_new_tokens=max_new, stop_ids=self._stop_ids, forbidden_ids=self._forbidden_ids,
        cache_length=length)
    tokens = jnp.pad(out.tokens, ((0, 0), (0, 0), (0, length - max_new)))
    if return_all_decodes:   # T5X order: increasing score, the best last
      return tokens[:, ::-1], {"scores": out.scores[:, ::-1]}
    return tokens[:, 0], {"scores": out.scores[:, 0]}
