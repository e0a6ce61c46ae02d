package proxy

import (
	"strconv"

	"github.com/gwelb/gwelb/fsm"
)

// setCookie builds the Set-Cookie value that pins a session to route:
// "<name>=.<route>; Path=/" plus the pool's attributes, as the guide's
// Apache config does with ROUTEID=.%{BALANCER_WORKER_ROUTE}e.
func setCookie(name, route string, a fsm.CookieSpec) string {
	if name == "" {
		return ""
	}
	b := []byte(name + "=." + route + "; Path=" + a.Path)
	if a.Domain != "" {
		b = append(b, "; Domain="...)
		b = append(b, a.Domain...)
	}
	if a.MaxAge > 0 {
		b = append(b, "; Max-Age="...)
		b = strconv.AppendInt(b, int64(a.MaxAge), 10)
	}
	if a.Secure {
		b = append(b, "; Secure"...)
	}
	if a.HTTPOnly {
		b = append(b, "; HttpOnly"...)
	}
	if a.SameSite != "" {
		b = append(b, "; SameSite="...)
		b = append(b, a.SameSite...)
	}
	return string(b)
}
