"""Lead routing: rule sets from ``contracts/routing/*.yaml`` (`contract`) and the engine that assigns owners, keeps
the assignment store and re-routes repaired records (`engine`)."""
