"""Evaluation stage: metrics, reports and batch inference."""
