"""The cab agent: face-verified start interlock for cranes and forklifts."""
