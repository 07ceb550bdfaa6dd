"""Gemma feature converters for seqio: correct BOS (2) by construction, batched and fast.

>>> import seqio, feature_converters as fc
>>> ds = seqio.get_dataset("gemma_en_de_libreoffice", {"inputs": 128, "targets": 128},
...                        feature_converter=fc.GemmaPrefixLMFeatureConverter(pack=True))
... # doctest: +SKIP

| converter                        | same output as                                  |
|----------------------------------|-------------------------------------------------|
| `GemmaPrefixLMFeatureConverter`  | `seqio.PrefixLMFeatureConverter(bos_id=2)`      |
| `GemmaLMFeatureConverter`        | `seqio.LMFeatureConverter(bos_id=2)`            |
| `GemmaEncDecFeatureConverter`    | `seqio.EncDecFeatureConverter(bos_id=2)`        |
| `GemmaSeq2SeqFeatureConverter`   | `gm.data.Seq2SeqTask` (`input`/`target`/`target_mask`) |

Modules: `packing` (pure numpy packing), `decoder_only`, `encoder_decoder`, `seq2seq` (one per
family: a numpy conversion function + the converter class), `base` (the TF edge),
`pipeline_options` (the tf.data options the pipelines run with: per-example maps fused).
"""
from feature_converters.base import BEST_FIT, IN_ORDER, GemmaFeatureConverter
from feature_converters.decoder_only import (GemmaLMFeatureConverter,
                                             GemmaPrefixLMFeatureConverter, lm_arrays,
                                             prefix_lm_arrays)
from feature_converters.encoder_decoder import GemmaEncDecFeatureConverter, enc_dec_arrays
from feature_converters.seq2seq import GemmaSeq2SeqFeatureConverter, seq2seq_arrays

__all__ = [
    "BEST_FIT", "IN_ORDER", "GemmaFeatureConverter", "GemmaLMFeatureConverter",
    "GemmaPrefixLMFeatureConverter", "GemmaEncDecFeatureConverter",
    "GemmaSeq2SeqFeatureConverter", "lm_arrays", "prefix_lm_arrays", "enc_dec_arrays",
    "seq2seq_arrays",
]
