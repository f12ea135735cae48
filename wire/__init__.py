"""What the API gateway and the engine workers share: the wire protocol, event streams,
the pool-wide fair gate and live state. No Django models live here."""
