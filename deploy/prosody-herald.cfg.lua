-- Prosody configuration for herald (Prosody 0.12 with prosody-modules' mod_privilege).
-- mod_privilege must be loaded globally AND in the component section.

modules_enabled = {
    -- … your other modules …
    "privilege";
}

VirtualHost "example.org"
    -- herald sees every local user's presence (XEP-0356 presence "managed_entity").
    privileged_entities = {
        ["herald.example.org"] = {
            presence = "managed_entity";
            roster = "get";
            message = "outgoing";
        };
    }

Component "herald.example.org"
    component_secret = "change me"   -- the same value as component.secret in herald's component.toml
    modules_enabled = { "privilege" }
