* Hand-written for sparseqp's tests: every bound type, integer markers (ignored: the
* variables stay continuous) and the negative-UP convention.
* minimize 1/2 sum x_i^2 + g'x,  g = (b -5, m -10, p 3, f -0.5, n 0, i1 0, z -7)
*   b  BV          -> [0, 1]        x = 1
*   m  MI + UP 3   -> [-inf, 3]     x = 3
*   p  LO 1 + PL   -> [1, inf]      x = 1
*   f  FR          -> free          x = 0.5
*   n  UP -2 alone -> [-inf, -2]    x = -2
*   i1 LI 2, UI 5  -> [2, 5]        x = 2
*   z  LO -4, UP -1 -> [-4, -1]     x = -1
* subject to b + m + p <= 100 (inactive).
* optimum -15.125
NAME          BOUNDS
ROWS
 N  obj
 L  lim
COLUMNS
    MARKER                 'MARKER'                 'INTORG'
    b         obj       -5.0         lim       1.0
    MARKER                 'MARKER'                 'INTEND'
    m         obj       -10.0        lim       1.0
    p         obj       3.0          lim       1.0
    f         obj       -0.5
    n         obj       0.0
    MARKER                 'MARKER'                 'INTORG'
    i1        obj       0.0
    MARKER                 'MARKER'                 'INTEND'
    z         obj       -7.0
RHS
    rhs       lim       100.0
BOUNDS
 BV bnd       b
 MI bnd       m
 UP bnd       m         3.0
 LO bnd       p         1.0
 PL bnd       p
 FR bnd       f
 UP bnd       n         -2.0
 LI bnd       i1        2
 UI bnd       i1        5
 LO bnd       z         -4.0
 UP bnd       z         -1.0
QUADOBJ
    b         b         1.0
    m         m         1.0
    p         p         1.0
    f         f         1.0
    n         n         1.0
    i1        i1        1.0
    z         z         1.0
ENDATA
