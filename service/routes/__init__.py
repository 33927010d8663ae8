"""One router per concern: classify, models, v2 (Open Inference Protocol), admin, metrics, web page."""
