"""sparseqp: solve and differentiate large sparse convex quadratic programs.

    min 1/2 x'Hx + g'x   s.t.   A x = b,   l <= C x <= u

Forward: proximal augmented Lagrangian (ProxQP family) on the QDLDL factorization of the
regularized KKT matrix. Infeasible problems: the closest feasible QP. Backward: derivatives
through the forward factorization.
"""
from .batch import WorkerError, WorkerPool, jvp_batch, solve_batch, vjp_batch
from .derivatives import DerivativeError, Gradients, Tangents
from .interface import Solver, solve
from .problem import Problem, make_problem
from .result import Result
from .settings import Settings, make_settings
from .status import Status

__all__ = ["solve", "Solver", "Settings", "make_settings", "Status", "Result", "Problem",
           "make_problem", "solve_batch", "vjp_batch", "jvp_batch", "WorkerPool", "WorkerError",
           "DerivativeError", "Gradients", "Tangents"]
__version__ = "0.1.0"
