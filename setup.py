"""pixelzoo: JAX off-policy agents that learn continuous control from pixels on DMC."""
import pathlib

from setuptools import setup

ROOT = pathlib.Path(__file__).parent


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
    packages=["agents", "networks", "envs", "replay", "launch"],
    # The official DrQ-v2 and DrQ curves that launch.plot overlays.
    package_data={"launch": ["reference/*.csv.gz"]},
    install_requires=_requirements(),
    extras_require={
        # CUDA 12 wheels of the same jax release (jaxlib's CUDA plugin from PyPI).
        "cuda": ["jax[cuda12]==0.10.2"],
        "tpu": ["jax[tpu]==0.10.2"],
        # pytest-xdist: the README runs the suite on two processes (it is compile-bound).
        "test": ["pytest>=8,<10", "pytest-xdist>=3.6,<4"],
    },
)
