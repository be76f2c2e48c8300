# /etc/profile.d/assume-roled.sh: points AWS tools at assume-roled in login shells of users
# who may use it (members of the token file's group). For everyone else `assume-roled env`
# fails quietly and this does nothing.
#
# Clients that predate the token-file variable (Debian 12's aws CLI 2.9, older Ubuntu's) need
# the token itself in the environment: set ASSUME_ROLED_INLINE_TOKEN=1 (in /etc/environment
# for everyone, or in a user's environment before this runs). The token then lives in the
# shell's environment, is inherited by its children, and goes stale when the token rotates
# until the next login.
if command -v assume-roled >/dev/null 2>&1; then
    _assume_roled_env=$(assume-roled env ${ASSUME_ROLED_INLINE_TOKEN:+--inline-token} 2>/dev/null) &&
        eval "$_assume_roled_env"
    unset _assume_roled_env
fi
