"""The venue BLE beacon (BlueZ advertisement over D-Bus) and the presence scanner (bleak)."""
