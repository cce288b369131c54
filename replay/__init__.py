"""The instrumented draft/verify engine."""
