"""Launch gates (spec 000 Layer F and §6; issue 20 §2): launch contracts (`contract`), the evidence each item needs
(`evidence`) and the decision node ``launch.gate`` that logs the evidence hashes and flips the launch's flag (`gate`).
docs/launches.md walks through it."""
