// The built-in chat page (server/web/*), embedded into the binary at build time
// (cmake/embed_files.cmake).
#ifndef XLSTMD_SERVER_WEB_PAGE_H_
#define XLSTMD_SERVER_WEB_PAGE_H_

#include <optional>
#include <string_view>

namespace xlstmd::server {

// The bytes of "/index.html", "/app.js", "/style.css"; nullopt for anything else.
std::optional<std::string_view> FindWebAsset(std::string_view path);

}  // namespace xlstmd::server

#endif  // XLSTMD_SERVER_WEB_PAGE_H_
