"""Lead routing: rule sets from ``contracts/routing/*.yaml`` (`contract`), the routing itself (`assign`), judging its
results (`fairness`: Gini, latency, shadow mode), and the warehouse side that loads owners, keeps the assignment
store and the dead-letter queue and re-routes repaired records (`engine`, which also re-exports the pure names)."""
