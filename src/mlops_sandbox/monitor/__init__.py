"""Monitoring (seed steps 11 and 20): captured predictions and late ground truth, checked with Evidently.

A run covers one time window. It reads the prediction logs whose timestamps fall in the window and the
actuals known so far for them, quarantines log files it cannot read, runs data drift against the
production model's training data (fetched through DVC) and regression performance where actuals exist,
applies the decay rule, and writes the figures. Reruns of a window overwrite its results: no duplicates.

- `checks`: the logic, without I/O (logs to frames, Evidently's figures, the decay rule, a window's status);
- `store`: its S3 reads and writes (prediction logs and actuals in; status, alerts, quarantine out);
- `steps`: `run_window`, the step the `monitoring` DAG runs, wiring them to MLflow, DVC and the Evidently UI.
"""
