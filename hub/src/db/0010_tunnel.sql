-- Each enrolled edge's address in the region's tunnel range (`[tunnel]` in hub.toml): given at
-- enrollment, kept on re-enrollment, freed with the row on decommission. UNIQUE: never two edges
-- on one address.
ALTER TABLE agog_hub.edges ADD COLUMN tunnel_address inet UNIQUE;
-- For IPsec: the edge's raw public key (PEM), made on the box and sent at enrollment.
ALTER TABLE agog_hub.edges ADD COLUMN ipsec_public_key text;
