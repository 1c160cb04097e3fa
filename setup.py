"""Build the Cython kernels in _ext/ into extension modules of the sparseqp package."""
import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup


def _extension(name):
    """sparseqp.<name> from _ext/<name>.pyx."""
    return Extension(
        f"sparseqp.{name}",
        [f"_ext/{name}.pyx"],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3"],
    )


extensions = [_extension("_kernels"), _extension("_krylov")]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "nonecheck": False,
        },
    ),
)
