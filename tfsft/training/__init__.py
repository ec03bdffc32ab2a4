"""Training stage: strategies (distribute), precision, optimiser, callbacks, fit()."""
