-- One step of the cancels' cascades (`cascade_step` in the prelude): at most CANCEL_STEP
-- children visited. Returns 1 while a cascade is left, else 0.
return cascade_step(KEY)
