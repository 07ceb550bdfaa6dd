"""gemma-seqio: Gemma as a first-class citizen of SeqIO / T5X."""
import setuptools

INSTALL_REQUIRES = [
    "seqio==0.0.20",
    "tensorflow==2.21.0",
    "tensorflow-text==2.21.1",
    "tensorflow-datasets==4.9.10",
    # 0.2.3 fails at import next to TF 2.21 (protobuf gencode/runtime mismatch).
    "sentencepiece==0.2.1",
    "protobuf==6.33.6",
    "numpy>=2.0,<2.5",
    "apache-beam==2.77.0",
    # Beam's TFRecord sink needs it; without it the sink fails and leaves beam-temp-* dirs.
    "google-crc32c>=1.5",
    "array-record==0.8.6",
    "sacrebleu==2.6.0",
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    # seqio's TensorBoard logger needs it.
    "tensorboard==2.21.0",
    "gin-config==0.5.0",
    "matplotlib>=3.8",
    "tqdm>=4.66",
    "safetensors==0.8.0",
]

# `gemma-seqio[dataflow]`: Beam's Google Cloud pieces for a real Dataflow submission
# (cache_scripts.dataflow). Same Beam version as above; `pip install --dry-run -c constraints.txt`
# resolves it next to every pin there without changing any of them.
DATAFLOW_REQUIRES = [
    "apache-beam[gcp]==2.77.0",
]

TEST_REQUIRES = [
    "pytest==9.2.0",
    "hypothesis==6.170.15",
    # The local CPU build; any other spec pulls GBs of CUDA wheels.
    "torch==2.13.0",
    "transformers==5.23.0",
]

setuptools.setup(
    name="gemma-seqio",
    version="0.1.0",
    description="Gemma vocabulary, dialog template, SeqIO tasks, feature converters, "
    "a Flax Gemma with the T5X model protocol, and Beam caching.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.13",
    packages=setuptools.find_packages(include=[
        "gemma_seqio", "gemma_tasks", "gemma_tasks.*", "feature_converters", "feature_converters.*",
        "model", "model.*", "cache_scripts", "cache_scripts.*"]),
    package_data={
        "gemma_tasks": ["data/*.gz", "data/*.model", "data/*.md", "data/*.json"],
        "model.runner.configs": ["*.gin"],
    },
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES, "dataflow": DATAFLOW_REQUIRES},
    entry_points={"console_scripts": [
        "gemma-tasks=gemma_tasks.__main__:main",
        "gemma-cache-tasks=cache_scripts.cache_tasks:console_main",
        "gemma-cache-tasks-dataflow=cache_scripts.dataflow:console_main",
        "gemma-train=model.runner.train:main",
        "gemma-evaluate=model.runner.evaluate:main",
    ]},
    license="Apache-2.0",
)
