"""Solar forecast providers: Solcast, Forecast.Solar, Open-Meteo (remote) and clear sky
(offline). ``forecasts.solar`` chains them; ``base`` holds what they share."""
