"""The filling-station agent: scan-to-fill interlock and camera-monitored filling."""
