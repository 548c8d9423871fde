-- Each enrolled edge's address in the region's tunnel range (`[tunnel]` in hub.toml): given at
-- enrollment, kept on re-enrollment, freed with the row on decommission. UNIQUE: never two edges
-- on one address.
ALTER TABLE agog_hub.edges ADD COLUMN tunnel_address inet UNIQUE;
