"""mlops-sandbox: every stage of the MLOps loop as plain, tested functions.

DAGs, the prediction service, notebooks and scripts import from here and add only wiring.
"""

__version__ = "0.1.0"
