"""How the harness reaches devices: transports, emulators and rig profiles."""
