"""Sudoku experiment of the QPLayer paper (learning constraint matrices), reproduced on sparseqp."""
