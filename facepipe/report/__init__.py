"""What a user looks at besides the result: the preview sheet made before the heavy work, the
QC report after it, and the enlarged before/after face crops both are made of (``face_sheet``).
"""
