"""Camera sources, QR decoding and payload parsing for the kiosk (camera → decode → verdict)."""
