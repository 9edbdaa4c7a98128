"""Reports rendered from pipeline outputs (translator comparison, ...): pure functions, no luigi."""
