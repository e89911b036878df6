"""Metric arithmetic as plain functions: no Kafka, no Redis, testable and benchmarkable on its own."""
