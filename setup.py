"""Builds diffai's compiled modules, each where Python per tensor was the measured cost:
the fused per-chunk pass (diffai/_kernel.c), its batch of small pairs (diffai/_batch.c)
and the objects it builds (diffai/_instances.c); the derived stages' loops over names
(diffai/_columns.c); the report's tensor records (diffai/_records.c); the analyses'
one-pass attribute columns (diffai/_attributes.c); a compact safetensors header's columns
and references (diffai/formats/_opening.c).

Everything else about the package is in pyproject.toml.
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# Reordering the kernel's sums lets GCC and Clang vectorise them (one chunk's rounding
# stays far below the 1e-6 the statistics promise); NaN and inf keep their meaning, as
# the kernel tests for them. MSVC gets no such flag: its /fp:fast assumes finite values.
GCC_FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fno-signed-zeros",
             "-fassociative-math"]  # fmt: skip
MSVC_FLAGS = ["/O2"]


class BuildKernel(build_ext):
    def build_extensions(self) -> None:
        flags = MSVC_FLAGS if self.compiler.compiler_type == "msvc" else GCC_FLAGS
        for extension in self.extensions:
            extension.extra_compile_args = flags
        super().build_extensions()


setup(
    ext_modules=[
        Extension(
            "diffai._kernel",
            ["diffai/_kernel.c", "diffai/_batch.c", "diffai/_instances.c"],
            depends=["diffai/_kernel.h"],
        ),
        Extension(
            "diffai._columns",
            ["diffai/_columns.c", "diffai/_instances.c"],
            depends=["diffai/_kernel.h"],
        ),
        Extension("diffai._records", ["diffai/_records.c"]),
        Extension("diffai._attributes", ["diffai/_attributes.c"]),
        Extension(
            "diffai.formats._opening",
            ["diffai/formats/_opening.c", "diffai/_instances.c"],
            depends=["diffai/_kernel.h"],
        ),
    ],
    cmdclass={"build_ext": BuildKernel},
)
