"""MLflow tracking: the store, one run per trained model with its provenance, the reuse of an earlier
evaluation, and the model registry. The only package of the ML core that imports ``mlflow``
(besides pipeline.serving, whose models subclass MLflow's ``PythonModel``)."""
