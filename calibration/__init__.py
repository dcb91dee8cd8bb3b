"""Turns labelled data into the numbers the service runs with: the match threshold (tau) from
labelled pairs, accuracy reports against face_recognition, and INT8 encoders calibrated on real
face chips. Depends on ``pipeline`` and ``engines``; nothing depends on it.
"""
