"""signalscore: explainable fit and urgency scores for B2B go-to-market teams."""

__version__ = "0.1.0"
