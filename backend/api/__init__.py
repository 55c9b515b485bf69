"""HTTP edge: routes, dependencies, wire schemas, error mapping, body limits."""
