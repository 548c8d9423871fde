-- A provisioned edge's tunnel address, reserved when its request is made (before its box exists):
-- the hub-side peer is ready for the box, whose WireGuard key is made on the box at first boot
-- and joins the peer at enrollment. UNIQUE like the edges' addresses; enrollment takes it;
-- decommissioning frees it.
ALTER TABLE agog_hub.provisioning_requests ADD COLUMN tunnel_address inet UNIQUE;
