* Hand-written for sparseqp's tests: "OBJSENSE MAXIMIZE" on one line, free format,
* an off-diagonal QUADOBJ entry given in the upper triangle.
* maximize 1 + 2 a + 4 b - (a^2 + a b + b^2)   s.t.   a + b <= 2,   a, b >= 0
* optimum (a, b) = (0, 2), maximum 5; read as a minimisation: -5
NAME maxqp_free
OBJSENSE MAXIMIZE
ROWS
 N gain
 L budget
COLUMNS
 a gain 2 budget 1
 b gain 4 budget 1
RHS
 rhs gain -1 budget 2
QUADOBJ
 a a -2
 a b -1
 b b -2
ENDATA
