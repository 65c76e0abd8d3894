"""Loopback fakes of the vendors' APIs (Slack Web API, Bot Framework connector) and their helpers,
used by the tests and the benchmark to exercise the real clients over HTTP.
Never used by the product at run time."""
