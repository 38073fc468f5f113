"""pixelzoo: JAX off-policy agents that learn continuous control from pixels on DMC."""
import pathlib

from setuptools import setup

ROOT = pathlib.Path(__file__).parent
SUBPACKAGES = ("agents", "networks", "envs", "replay", "launch")
LAUNCHERS = ("train", "sweep", "plot", "benchmark")


def _requirements() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


setup(
    name="pixelzoo",
    version="0.1.0",
    description=__doc__,
    long_description=(ROOT / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.13",
    # One namespace: the repository's top-level folders become pixelzoo.<folder> (README,
    # "Why pixelzoo is a namespace package"); nothing else is installed at the top level.
    packages=[f"pixelzoo.{name}" for name in SUBPACKAGES],
    package_dir={f"pixelzoo.{name}": name for name in SUBPACKAGES},
    # The official DrQ-v2 and DrQ curves that pixelzoo.launch.plot overlays.
    package_data={"pixelzoo.launch": ["reference/*.csv.gz"]},
    entry_points={"console_scripts": [
        f"pixelzoo-{name}=pixelzoo.launch.{name}:run" for name in LAUNCHERS]},
    install_requires=_requirements(),
    extras_require={
        # CUDA 12 wheels of the same jax release (jaxlib's CUDA plugin from PyPI).
        "cuda": ["jax[cuda12]==0.10.2"],
        "tpu": ["jax[tpu]==0.10.2"],
        # pytest-xdist: the README runs the suite on two processes (it is compile-bound).
        # Optional Weights & Biases logging (--wandb).
        "wandb": ["wandb==0.31.0"],
        # wandb: the suite tests --wandb in offline mode.
        "test": ["pytest>=8,<10", "pytest-xdist>=3.6,<4", "wandb==0.31.0"],
    },
)
