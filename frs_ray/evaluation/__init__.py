"""Evaluation of attacks x defenses: metrics (Appendix B.1, Tables 1-2, 5), the model zoo, ``frs eval``."""
