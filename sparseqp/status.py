"""Solver statuses: the one place where every status and its message is defined."""
from enum import IntEnum

__all__ = ["Status", "STATUS_MESSAGES", "SOLUTION_STATUSES"]


class Status(IntEnum):
    """Outcome of a solve.

    Positive values are successes (a solution is returned), negative ones are not.
    SOLVED_INACCURATE is a success, less accurate than asked; ``message`` says which way:
    either the residuals meet the tolerance and the duality gap stopped decreasing above its
    own (rounding, or an active set the polish could not settle), or the residuals stopped
    above the tolerance within a small factor (10) of their rounding floor, eps times the
    size of the terms of each row: the tolerance is below what double precision resolves
    on that problem's data.
    """

    SOLVED = 1
    SOLVED_CLOSEST_FEASIBLE = 2
    SOLVED_INACCURATE = 3
    MAX_ITER_REACHED = -2
    PRIMAL_INFEASIBLE = -3
    DUAL_INFEASIBLE = -4
    TIME_LIMIT_REACHED = -5
    NUMERICAL_ERROR = -10

    @property
    def success(self) -> bool:
        return self.value > 0

    @property
    def message(self) -> str:
        return STATUS_MESSAGES[self]

    @property
    def feasible_solution(self) -> bool:
        """True for SOLVED and SOLVED_INACCURATE: x, y, z meet the residual tolerances of the
        original (unshifted) problem, or their rounding floor; derivatives take the feasible
        solution map."""
        return self in (Status.SOLVED, Status.SOLVED_INACCURATE)


STATUS_MESSAGES = {
    Status.SOLVED: "Optimal solution found to the requested tolerance.",
    Status.SOLVED_CLOSEST_FEASIBLE: (
        "The constraints are inconsistent; returned the solution of the closest feasible QP "
        "(smallest l2 constraint shift, see s_eq and s_in)."
    ),
    Status.SOLVED_INACCURATE: (
        "Solution found, less accurate than requested (x is feasible and nearly stationary; "
        "the objective may be inaccurate):"
    ),
    Status.MAX_ITER_REACHED: "Maximum number of iterations reached before convergence.",
    Status.PRIMAL_INFEASIBLE: (
        "The problem is primal infeasible; a certificate is in "
        "result.certificate (dy, dz)."
    ),
    Status.DUAL_INFEASIBLE: (
        "The problem is dual infeasible (unbounded below); a certificate direction is in "
        "result.certificate (dx)."
    ),
    Status.TIME_LIMIT_REACHED: "Time limit reached before convergence.",
    Status.NUMERICAL_ERROR: "Numerical error.",
}

#: Statuses that return a solution (``Status.success``): the derivatives and the torch layer
#: accept these.
SOLUTION_STATUSES = tuple(s for s in Status if s.success)
