"""What leaves the project: the trained models as self-contained MLflow pyfunc models."""
