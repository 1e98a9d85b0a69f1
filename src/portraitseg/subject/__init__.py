"""The subject of a photo: who is in it and what stays sharp (faces, subject alpha, ...)."""
