"""Training stage: strategy and precision, optimiser, callbacks, the fit() driver."""
