-- The WxCC region an invite connects (NULL: the customer admin picks it on the connect page),
-- carried by the pending authorization to the callback. Same on both backends.
ALTER TABLE invites ADD COLUMN region TEXT;
ALTER TABLE pending_auths ADD COLUMN region TEXT;
