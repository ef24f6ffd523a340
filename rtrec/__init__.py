"""rtrec: real-time personalized recommendations."""
