"""`kubectl edgewise`'s parts: each a pure function of what the API returned, except watch.py."""
