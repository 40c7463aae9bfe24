"""The running application: settings, wiring (bootstrap), the gateway service, reloads, auth, metrics."""
