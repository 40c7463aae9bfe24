"""The enforcement engine over the ports: admission, the library façade, rebuilds, budget status."""
